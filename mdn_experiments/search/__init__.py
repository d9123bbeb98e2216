"""The validation-only search (`hparams_search=...`): a Hydra sweeper of the project's own, Optuna's
ask and tell, the study inside the sweep folder, and the search's summary."""
