"""Dataclass schemas, one per recipe, plus the shared pieces they are built from."""
