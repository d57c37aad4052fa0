import sys

from smtp_proxy.cli import main

sys.exit(main())
