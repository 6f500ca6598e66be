/*
 * tools/cli.h - small helpers the two command-line programs share
 * (tools/aidos_main.c: aidos; coordinator/aidosctl_main.c: aidosctl).
 */
#ifndef AIDOS_TOOLS_CLI_H
#define AIDOS_TOOLS_CLI_H

#include <stdio.h>

/* Writes s (NULL: the empty string) to f as a JSON string literal: quotes,
 * backslash and control characters escaped; other bytes as they are (the
 * names and messages printed are UTF-8 already). */
static inline void cli_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

#endif
