# The one compiled part: planoscope._otlp, the OTLP decoder on the ingest hot path.
from setuptools import Extension, setup

setup(ext_modules=[Extension("planoscope._otlp", ["src/planoscope/_otlp.c"], extra_compile_args=["-O2"])])
