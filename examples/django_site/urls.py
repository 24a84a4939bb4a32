"""The example site's URLs (see the package's docstring)."""

from django.urls import path

from examples.django_site import views

urlpatterns = [
    path("visits/<str:name>", views.visits),
    path("echo/<str:token>", views.echo),
    path("_stats", views.stats),
]
