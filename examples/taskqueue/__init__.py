"""A journaled bulk job run by a real task queue (saq on Redis); see README.md here."""
