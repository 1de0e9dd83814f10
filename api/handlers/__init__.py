"""Thin request handlers: parse, call one service function, render."""
