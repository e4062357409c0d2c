"""platform/embedded"""
