from framepack_trt.cli import main

main()
