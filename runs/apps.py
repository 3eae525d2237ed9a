from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        from agents.signals import turn_ended
        from runs.signals import on_turn_ended

        # A step's turn ended: the run's dispatcher looks at it again (the beat sweep is the backstop).
        turn_ended.connect(on_turn_ended, dispatch_uid="runs-turn-ended")
