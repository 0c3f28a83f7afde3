"""Recommendation models behind one interface (:mod:`valuerec.recommend.base`)."""
