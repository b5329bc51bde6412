from django.urls import path

from tests.django_site.shop import views

urlpatterns = [path("item/<int:number>/", views.item), path("setup/", views.setup)]
