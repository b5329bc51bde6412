"""Three ORM queries, one insert and a database session per request, as such apps do."""

from django.http import JsonResponse

from tests.django_site.shop.models import Item, Visit

ITEMS = 50


def setup(request):
    for number in range(ITEMS):
        Item.objects.get_or_create(name=f"item-{number}")
    return JsonResponse({"items": Item.objects.count()})


def item(request, number):
    item = Item.objects.get(name=f"item-{number % ITEMS}")
    Visit.objects.create(item=item)
    visits = Visit.objects.filter(item=item).count()
    total = Item.objects.count()
    request.session["seen"] = request.session.get("seen", 0) + 1
    return JsonResponse({"item": item.name, "visits": visits, "items": total})
