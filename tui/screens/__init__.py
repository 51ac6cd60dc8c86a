"""One module per screen of the workbench, plus the modal dialogs they open."""
