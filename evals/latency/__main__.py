import sys

from evals.latency import main

sys.exit(main())
