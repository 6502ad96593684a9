"""The annotation tools' protocols, each a small router over the server's core (core.py), under a
prefix of its own so that no route of one meets another's: a tool is pointed at
http://HOST:PORT/<prefix> as its backend's URL."""


def include_tools(app, core):
    pass
