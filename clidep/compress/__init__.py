"""Compression: block importance, width schedules, student initialisation, distillation, LayerCollapse."""
