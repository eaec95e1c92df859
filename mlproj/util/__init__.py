"""Leaf helpers: atomic files, values, URIs, tables. Imports nothing of mlproj's but errors."""
