"""A site with a second admin beside the default one, each with the pool's pages."""

from django.contrib import admin
from django.urls import include, path

second_site = admin.AdminSite(name="second")
for model, model_admin in admin.site._registry.items():
    second_site.register(model, type(model_admin))

urlpatterns = [
    path("admin/", admin.site.urls),
    path("second/", second_site.urls),
    path("pool/", include("taskpool.urls")),
]
