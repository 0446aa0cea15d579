"""Model training: the data, the model family, tuning, calibration, evaluation, registration."""
