// `cubby commit BOX REF` (docker commit): a new image, the box's image plus
// one layer holding the box's changes, tagged REF.
//
// The changes are the box's overlay upper directory, read on the host and
// written as an OCI layer tar: overlayfs's whiteouts (0/0 character devices)
// become ".wh.NAME" files and its opaque directories (user.overlay.opaque,
// the box mounts with userxattr) ".wh..wh..opq", and owners go back from the
// host ids of a box's range (runtime/idmap.h) to the box's own. The store
// then unpacks it as it unpacks a pulled layer (overlay whiteouts) and
// commits config (the parent's, the new diff_id, a history entry, the
// --change instructions) and manifest (the parent's layers plus this one).
// A running box is read as it is (Docker pauses it; cubby does not yet).
// Sandbox boxes only: a vm box's upper is inside its disk image.
#pragma once

#include <string>

#include "base/error.h"
#include "image/image_store.h"

namespace cubby {

class Runtime;

Result<image::ImageInfo> commit_box(Runtime& rt, const std::string& box, const std::string& ref,
                                    const image::ConfigChanges& changes);

}  // namespace cubby
