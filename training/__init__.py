"""Model training, calibration, evaluation and registration."""
