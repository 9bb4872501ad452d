"""Small shared helpers: seeding, device choice, progress bars, atomic writes, run directories."""
