"""Interchangeable inference backends behind one interface (see base.Backend)."""
