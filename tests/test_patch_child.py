"""Child processes from patched threads and pool greenlets (``greenpool.monkey.child``).

gevent watches children only on the main thread's loop; after
``greenpool.monkey.patch_all()`` a thread or a request handler runs on a pool
hub, where ``subprocess`` and ``os.fork`` raised ``TypeError`` (after forking).
Each check runs in a fresh patched interpreter (see ``test_patch_threads``).
"""

from __future__ import annotations

import sys

import pytest

from tests.test_patch_threads import result_of, run_script

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfds: Linux")


def test_subprocess_in_threads_on_pool_hubs():
    proc = run_script(
        """
        import subprocess
        out, hubs = [], set()
        def call(i):
            hubs.add(hub_index())
            r = subprocess.run([sys.executable, "-c", f"print({i})"], capture_output=True,
                               timeout=20)
            p = subprocess.Popen(["true"])
            out.append((r.returncode, r.stdout.strip().decode(), p.wait(timeout=20)))
        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failing = subprocess.run(["sh", "-c", "exit 3"]).returncode  # the main thread: gevent's
        report(out=sorted(out), hubs=sorted(hubs), failing=failing)
        """
    )
    values = result_of(proc)
    assert values["out"] == [[0, str(i), 0] for i in range(4)]
    assert None not in values["hubs"]
    assert values["failing"] == 3


def test_subprocess_exit_status_and_timeout_in_a_pool_greenlet():
    proc = run_script(
        """
        import subprocess
        def task():
            code = subprocess.run(["sh", "-c", "exit 5"]).returncode
            try:
                subprocess.run(["sleep", "5"], timeout=0.2)
            except subprocess.TimeoutExpired:
                timed_out = True
            return code, timed_out, hub_index()
        code, timed_out, hub = greenpool.spawn(task).result(timeout=30)
        report(code=code, timed_out=timed_out, hub=hub)
        """
    )
    values = result_of(proc)
    assert values == {"code": 5, "timed_out": True, "hub": values["hub"]}
    assert values["hub"] is not None


def test_fork_and_waitpid_in_a_thread_and_threads_in_its_child():
    proc = run_script(
        """
        import queue
        statuses = []
        def fork_in_thread():
            pid = os.fork()
            if pid == 0:
                # The child of a hub thread: locks, queues and threads still work.
                q = queue.Queue()
                t = threading.Thread(target=q.put, args=(7,))
                t.start()
                t.join()
                os._exit(q.get(timeout=10))
            statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        t = threading.Thread(target=fork_in_thread)
        t.start()
        t.join(30)
        report(statuses=statuses, alive=t.is_alive())
        """
    )
    assert result_of(proc) == {"statuses": [7], "alive": False}


def test_waitpid_of_a_hub_child_from_another_hub_and_the_main_thread():
    proc = run_script(
        """
        def start(code):
            pid = os.fork()
            if pid == 0:
                time.sleep(0.2)
                os._exit(code)
            return pid
        pool = greenpool.default_pool()
        first = pool.spawn_on(0, start, 4).result(timeout=20)
        second = pool.spawn_on(0, start, 6).result(timeout=20)
        on_other_hub = pool.spawn_on(1, os.waitpid, first, 0).result(timeout=20)
        in_main = os.waitpid(second, 0)
        report(other=os.waitstatus_to_exitcode(on_other_hub[1]),
               main=os.waitstatus_to_exitcode(in_main[1]))
        """
    )
    assert result_of(proc) == {"other": 4, "main": 6}


def test_waitpid_of_a_main_thread_child_from_a_thread_and_process_pool_executor():
    # gevent's waitpid started a child watcher on the main loop from the
    # waiting thread and failed in the main loop ("Can only use Waiter.switch
    # method from the Hub greenlet"): ProcessPoolExecutor's manager thread
    # joins the workers the main thread forked.
    proc = run_script(
        """
        import concurrent.futures
        pid = os.fork()
        if pid == 0:
            time.sleep(0.2)
            os._exit(3)
        statuses = []
        t = threading.Thread(
            target=lambda: statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])))
        t.start()
        t.join(30)
        with concurrent.futures.ProcessPoolExecutor(2) as executor:
            total = sum(executor.map(abs, range(-10, 10)))
        report(statuses=statuses, total=total)
        """
    )
    assert result_of(proc) == {"statuses": [3], "total": 100}


@pytest.mark.timeout(90)
def test_children_exiting_on_several_hubs_at_once_print_nothing():
    # gevent's _reap_children iterated the shared dict of watched children in
    # Python while another hub added one: "dictionary changed size during
    # iteration" from an exit callback (with a tiny switch interval: every run, before).
    proc = run_script(
        """
        import subprocess
        sys.setswitchinterval(1e-6)  # hand the GIL over often: the race shows in every run
        codes = []
        def spawn_many():
            for _ in range(40):
                codes.append(subprocess.Popen(["true"]).wait(timeout=20))
        threads = [threading.Thread(target=spawn_many) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report(codes=len(codes), failed=sum(codes))
        """,
        timeout=80,
    )
    assert result_of(proc) == {"codes": 320, "failed": 0}


@pytest.mark.timeout(90)
def test_forks_from_several_hubs_at_once_never_hang():
    # concurrent.futures.thread's os.fork() hooks hold the lock it made at
    # import; gevent imported it right after patching threading, so that was
    # gevent's one-hub lock, and two hubs forking at once lost a wake-up on it:
    # a thread parked inside os.fork() for good (most runs, before).
    proc = run_script(
        """
        sys.setswitchinterval(1e-6)
        statuses = []
        def fork_many():
            for _ in range(20):
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                statuses.append(os.waitpid(pid, 0)[1])
        threads = [threading.Thread(target=fork_many, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        report(forks=len(statuses), failed=sum(statuses), alive=sum(t.is_alive() for t in threads))
        """,
        timeout=80,
    )
    assert result_of(proc) == {"forks": 160, "failed": 0, "alive": 0}
