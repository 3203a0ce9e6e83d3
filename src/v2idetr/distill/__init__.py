"""Video-to-image distillation: Target-guided Feature Distillation (TFD) and Cross-view Query Distillation (CQD)."""
