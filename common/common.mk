# common/common.mk: the code both programs link (fluxgate-worker and
# fluxgate-reconcile), named once for their Makefiles, which include this
# file.  Each program compiles these sources into its own object directory
# with its own flags; nothing is built here.
#
#   COMMON_SRCS   the sources, found through vpath from the program's folder
#   COMMON_HDRS   their headers, which each object depends on
#   COMMON_INC    the -I that finds those headers

COMMON      := ../common
COMMON_SRCS := pg.c log.c strmap.c cli.c
COMMON_HDRS := $(wildcard $(COMMON)/*.h)
COMMON_INC  := -I$(COMMON)

vpath %.c $(COMMON)
