#include <iostream>
#include <string>

#include "tokenizer.h"

int main(int argc, char** argv) {
  std::string text;
  for (int i = 1; i < argc; ++i) text += (i > 1 ? " " : "") + std::string(argv[i]);
  if (text.empty()) text = "Hello, GPU world!";
  auto tokens = demo::tokenize(text);
  std::cout << demo::version() << ": " << tokens.size() << " tokens:";
  for (const auto& t : tokens) std::cout << " [" << t << "]";
  std::cout << std::endl;
  return 0;
}
