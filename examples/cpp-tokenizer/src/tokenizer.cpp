#include "tokenizer.h"

#include <cctype>

namespace demo {
std::vector<std::string> tokenize(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text) {
    unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) {
      cur.push_back(static_cast<char>(std::tolower(u)));
    } else {
      if (!cur.empty()) out.push_back(cur), cur.clear();
      if (std::ispunct(u)) out.emplace_back(1, c);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}
const char* version() { return "demotok 1.2.0"; }
}  // namespace demo
