from chordkd.cli import main

raise SystemExit(main())
