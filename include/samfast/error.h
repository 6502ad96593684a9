// Errors carry a message a user can act on; the CLI prints it as one line.
#pragma once
#include <stdexcept>
#include <string>

namespace samfast {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The input was refused: a prompt outside the image, an option out of range, an image of the wrong
// shape, a name that is not a precision. (Python: ValueError.)
struct InvalidArgument : Error {
  using Error::Error;
};

// An image file whose header gives more pixels than the reader's limit (found before it is decoded:
// a server answers 413, not "not an image"). (Python: samfast.ImageTooLarge, a ValueError.)
struct ImageTooLarge : InvalidArgument {
  using InvalidArgument::InvalidArgument;
};

// The device could not give the memory asked for (the message names the bytes; the model adds which
// stage and batch size asked).
struct OutOfMemory : Error {
  using Error::Error;
};

}  // namespace samfast
