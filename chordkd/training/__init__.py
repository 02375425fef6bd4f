"""Training: the student LightningModule, losses, distillation callbacks, configs and ``fit``."""
