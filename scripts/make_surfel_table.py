"""Regenerate the 3D surfel table of ``lvmbench/metrics/surfel_table.py`` (prints the table text).

    pip install pymcubes && python scripts/make_surfel_table.py > /tmp/table.txt

How the table is made (it is data, so the recipe is kept beside it):

- A 2x2x2 neighbourhood of voxels (a cell of the grid of voxel corners) has 256 in/out patterns. Bit
  ``4*a + 2*b + c`` of a code is the voxel at offset (a, b, c) of the cell.
- A code's surface is cut from its *minority* side (the set bits when at most 4 are set, else the
  clear ones, so a code and its complement share one surface) and is the union of the surfaces of
  that side's 6-connected components, each triangulated by classic marching cubes (iso-level 0.5:
  vertices at edge midpoints; PyMCubes' table). Components never join across a face whose
  diagonal corners alone are set: the ambiguous faces are always resolved as separated.
- Each triangle is stored as its unit-spacing area vector (half the cross product of two edges), as
  absolute values in eighths; ``surfel_table.py`` scales it to any voxel spacing.

``tests/test_surface_dice.py`` checks the resulting areas against DeepMind's ``surface-distance``
for random anisotropic spacings (all 256 codes agree to 1e-12).
"""

from __future__ import annotations

import itertools

import numpy as np

CORNERS = list(itertools.product((0, 1), repeat=3))


def bit(corner: tuple[int, ...]) -> int:
    a, b, c = corner
    return 1 << (4 * a + 2 * b + c)


def components(code: int) -> list[list[tuple[int, ...]]]:
    """6-connected components (neighbours differ in one coordinate) of the set corners."""
    todo = [p for p in CORNERS if code & bit(p)]
    out = []
    while todo:
        comp, stack = [], [todo.pop()]
        while stack:
            p = stack.pop()
            comp.append(p)
            near = [q for q in todo if sum(abs(x - y) for x, y in zip(p, q)) == 1]
            for q in near:
                todo.remove(q)
            stack += near
        out.append(comp)
    return out


def triangles(component: list[tuple[int, ...]]) -> list[tuple[int, int, int]]:
    import mcubes

    cube = np.zeros((2, 2, 2))
    for p in component:
        cube[p] = 1.0
    verts, faces = mcubes.marching_cubes(cube, 0.5)
    out = []
    for tri in verts[faces]:
        vec = np.abs(np.cross(tri[1] - tri[0], tri[2] - tri[0])) / 2 * 8
        assert np.allclose(vec, np.round(vec)), vec  # midpoint vertices: multiples of 1/8
        out.append(tuple(int(round(v)) for v in vec))
    return out


def main() -> None:
    for code in range(1, 128):  # codes 128..254 are complements of these (same surface)
        side = code if bin(code).count("1") <= 4 else 255 - code
        tris = [t for comp in components(side) for t in triangles(comp)]
        print(f"{code} " + " ".join("".join(str(v) for v in t) for t in tris))


if __name__ == "__main__":
    main()
