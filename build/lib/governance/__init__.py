"""After deployment: monitoring, validation against a challenger, the impact of a promotion."""
