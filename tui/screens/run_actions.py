"""What a user can do to one run, shared by the Train and Runs screens and a run's detail screen.

Pause, continue or stop it (through the store: its process answers), delete
it (after asking), export it, generate with one of its checkpoints, resume it.
Store calls run in thread workers; the screens call these with a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import work

from engine.store import ACTIVE_STATUSES, can_resume
from tui.screens.base import WorkbenchScreen
from tui.screens.confirm import ConfirmScreen

if TYPE_CHECKING:
    from engine.store import Run


# What the app says once a run has answered a request, by the status it answered with.
ANSWERS = {
    "paused": "paused at step {steps}",
    "running": "continues from step {steps}",
    "stopped": "stopped at step {steps}; its checkpoint is saved",
    "cancelled": "was queued; cancelled",
    "completed": "completed at step {steps}",
}


class RunActionsScreen(WorkbenchScreen):
    """A screen that offers pause, continue, stop, delete, export, generate-with and resume for runs."""

    def after_delete(self, run_id: str) -> None:
        """Called on the UI thread once a run is gone (the detail screen closes itself)."""

    # -- pause, continue, stop --------------------------------------------------

    def control(self, run: "Run", action: str) -> None:
        """Ask the run's process (wherever it was started) to pause, continue or stop; say when it answers."""
        self._control(run.id, run.name, action)

    @work(thread=True, group="run-control", exit_on_error=False)
    def _control(self, run_id: str, name: str, action: str) -> None:
        from engine.run_process import control_run

        run = control_run(self.workbench.store, run_id, action)
        answer = ANSWERS.get(run.status, run.status).format(steps=run.steps)
        self.app.call_from_thread(self.notify, f"Run {name} {answer}.")

    # -- delete -----------------------------------------------------------------

    def delete_run(self, run: "Run") -> None:
        """Ask, then delete the run's rows and its directory of checkpoints."""
        if run.status in ACTIVE_STATUSES:
            self.notify(f"{run.name} is {run.status}; stop it before deleting it.", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(run.id, run.name)

        self.app.push_screen(
            ConfirmScreen(
                f"Delete run {run.name} ({run.id})?",
                "Its metrics, samples and checkpoints are removed from disk. This cannot be undone.",
                yes="Delete",
                no="Keep",
            ),
            answered,
        )

    @work(thread=True, group="run-action", exit_on_error=False)
    def _delete(self, run_id: str, name: str) -> None:
        self.workbench.store.delete_run(run_id)
        self.app.call_from_thread(self.notify, f"Deleted run {name} ({run_id}).")
        self.app.call_from_thread(self.after_delete, run_id)

    # -- export -----------------------------------------------------------------

    @work(thread=True, group="run-action", exit_on_error=False)
    def export_run(self, run: "Run") -> None:
        """Write the run as JSON (everything) and CSV (its metrics) into the current directory."""
        written = []
        for fmt in ("json", "csv"):
            path = Path.cwd() / f"lmwb-{run.name or 'run'}-{run.id}.{fmt}"
            path.write_text(self.workbench.store.export_run(run.id, fmt), encoding="utf-8")
            written.append(path.name)
        self.app.call_from_thread(self.notify, f"Exported {run.name}: {', '.join(written)} in {Path.cwd()}")

    # -- generate and resume ----------------------------------------------------

    def generate_with(self, run: "Run", step: int | None = None) -> None:
        """Make the run's checkpoint (the latest, or ``step``) the chosen model and go to Generate."""
        self.workbench.model = f"run:{run.id}" + (f"@{step}" if step is not None else "")
        self.app.switch_mode("generate")

    def resume_run(self, run: "Run") -> None:
        """Send the run's configuration to the Train screen, where Ctrl+R continues it."""
        if not can_resume(run.status):
            self.notify(f"{run.name} is already {run.status}.", severity="warning")
            return
        self.workbench.pending_resume = (run.id, run.name, dict(run.config))
        self.app.switch_mode("train")
