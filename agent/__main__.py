from cityedge.cli import main

raise SystemExit(main())
