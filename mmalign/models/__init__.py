"""Models: the Policy protocol, adapters for text and multimodal models, tiers and toy builders."""
