#!/usr/bin/env python
"""Django's command-line utility; the same as the `cognitionos` command."""

from cognitionos.cli import main

if __name__ == "__main__":
    main()
