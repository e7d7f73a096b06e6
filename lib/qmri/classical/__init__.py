"""Classical (non-learned) reference methods for every task."""
