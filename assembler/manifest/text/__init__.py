"""Text as a manifest writes it, the bottom floor of :mod:`assembler.manifest`: YAML that
remembers the file and line of every value (:mod:`.yamlfile`), URLs shown without their
secrets (:mod:`.urls`), and the "did you mean" of a mistyped name (:mod:`.suggest`)."""
