from omnimocap.apps.cli import main

raise SystemExit(main())
