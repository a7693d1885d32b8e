#!/usr/bin/python3
"""The broker's files form layers: no file calls a function of a file that
calls it back, directly or through others (docs/DESIGN.md, "Layers").

Reads the symbols of the broker library's object files (nm): file A calls
file B when A uses a function or variable that B defines. Prints the layers
found, lowest first, and fails naming the files of each circle.

    layers.py OBJECT.o...
"""
import collections
import os
import subprocess
import sys


def module(path):
    return os.path.basename(path).split('.')[0]


def main(objects):
    defined, used = {}, collections.defaultdict(set)
    for path in objects:
        name = module(path)
        out = subprocess.run(['nm', path], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1] in 'TDBRC':
                defined[fields[2]] = name
            elif len(fields) == 2 and fields[0] == 'U':
                used[name].add(fields[1])
    calls = {module(p): set() for p in objects}
    for name, symbols in used.items():
        calls[name] |= {defined[s] for s in symbols if s in defined and defined[s] != name}

    # Tarjan's strongly connected components: each with more than one file
    # is a circle.
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(calls[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(calls):
        if v not in index:
            visit(v)
    if circles:
        for circle in circles:
            print('circle: ' + ', '.join(circle))
            for v in circle:
                print('  %s -> %s' % (v, ' '.join(sorted(calls[v] & set(circle)))))
        return 1
    # Layer of a file: 0 if it calls no other, else one above its highest callee.
    layer = {}

    def height(v):
        if v not in layer:
            layer[v] = 1 + max((height(w) for w in calls[v]), default=-1)
        return layer[v]

    for v in calls:
        height(v)
    for level in range(max(layer.values()) + 1):
        print('layer %d: %s' % (level, ' '.join(sorted(v for v in layer if layer[v] == level))))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
