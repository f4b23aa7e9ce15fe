"""The application layer: one function per action an operator or a program
can take, whoever calls it (the JSON API, provctl through it, the console,
agent endpoints, the worker).

Each action takes the services and the acting :class:`~.principal.Principal`,
validates, writes in one transaction and performs its after-commit effects
itself, so that no caller can forget one. Views only parse, call and present.
"""
