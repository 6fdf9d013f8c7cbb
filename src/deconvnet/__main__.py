from deconvnet.faces.cli import main

raise SystemExit(main())
