"""Build the Cython box-NMS extension in place: ``make -C lib`` (runs this from lib/).

Produces lib/nms/cpu_nms.<abi>.so; the generated C file stays under lib/build/.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

if __name__ == "__main__":
    extension = Extension("lib.nms.cpu_nms", sources=["nms/cpu_nms.pyx"])
    setup(
        name="hrnet-nms-extension",
        # lib/ is the ``lib`` package itself, so --inplace writes next to cpu_nms.pyx.
        package_dir={"lib": "."},
        packages=[],
        ext_modules=cythonize([extension], build_dir="build", language_level=3),
        zip_safe=False,
    )
