"""One run, in layers: objects from settings, the phases with their training state, the run folder."""
