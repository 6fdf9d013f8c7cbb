from deconvnet.cli import main

raise SystemExit(main())
