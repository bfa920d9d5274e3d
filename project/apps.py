from django.apps import AppConfig


class DemoSiteConfig(AppConfig):
    name = "project"
    verbose_name = "taskpool demo site"
