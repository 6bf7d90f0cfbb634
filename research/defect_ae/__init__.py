"""A lightweight reconstruction network for unsupervised surface defect detection."""
