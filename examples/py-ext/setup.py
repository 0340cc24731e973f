from setuptools import Extension, setup

setup(
    packages=["demo_ext"],
    package_dir={"": "src"},
    ext_modules=[Extension("demo_ext._native", ["src/demo_ext/_native.c"], extra_compile_args=["-O2"])],
)
