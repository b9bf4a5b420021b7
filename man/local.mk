# man: the manual pages, installed by make install; tests/test-manpages.sh keeps them in step with
# each program's --help.
dist_man_MANS += \
	man/hymbad.8 \
	man/hymbad.conf.5 \
	man/hymbactl.1 \
	man/hymba-mkmodel.1 \
	man/hymba-run.1 \
	man/hymba-bench.1 \
	man/hymba-ckbench.1
