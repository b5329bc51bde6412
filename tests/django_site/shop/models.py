from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=40, unique=True)

    class Meta:
        db_table = "greenpool_shop_item"


class Visit(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "greenpool_shop_visit"
