"""The figures: one module per task (inverse_sine, robot_arm, mnist, table), the figures every run
draws (common: losses, health, calibration, the sweep over K), the search's, and the shared style.
Each function takes arrays and keyword arguments and writes one PNG; none imports a dataset, a
network or torch, so any source of arrays can draw them (`run.figures` asks a trained run,
`MDNRegressor.predict_dist` a notebook's model). matplotlib is imported only when something is
drawn."""
