"""The user's commands over trained runs, apart from the paper's experiments: evaluate, compare,
embed, sample. Each is a typed function `f(run, settings)` with a `report(result)`."""
