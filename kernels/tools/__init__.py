"""Build-time tools for the Triton kernels; nothing at run time imports them.

    python -m kernels.tools.aot_check   # ahead-of-time GPU builds + resource report
    python -m kernels.tools.traffic     # bytes-moved model of the kernels

specs.py enumerates what aot_check builds. Docs: docs/kernel_resources.md.
"""
