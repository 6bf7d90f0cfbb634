"""Delving into Semantic Scale Imbalance (Ma, Jiao et al., ICLR 2023): the semantic scale of a
class, its imbalance across classes, and dynamic semantic-scale-balanced (DSB) learning."""
