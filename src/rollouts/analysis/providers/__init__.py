"""analysis/providers"""
