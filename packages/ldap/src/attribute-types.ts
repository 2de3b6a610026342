/**
 * Attribute types a directory of people knows whatever its schema maps:
 * the operational ones (RFC 4512, and those OpenLDAP adds), the user
 * attributes of RFC 4519, and those inetOrgPerson may hold (RFC 2798 and
 * the COSINE ones it borrows). Canonical keys (see filter.ts attrKey).
 *
 * A filter that asserts something of a type outside this set and the
 * schema's mapping is Undefined (RFC 4511 4.5.1.7), as in OpenLDAP, so
 * `(!(noSuchType=x))` matches nothing; a type in the set that an entry does
 * not hold is False, so `(!(jpegPhoto=*))` matches every entry.
 */
export const STANDARD_ATTRIBUTE_TYPES: ReadonlySet<string> = new Set([
  // operational and root DSE
  'objectclass', 'aliasedobjectname', 'createtimestamp', 'modifytimestamp', 'creatorsname', 'modifiersname',
  'structuralobjectclass', 'governingstructurerule', 'subschemasubentry', 'entrydn', 'entryuuid', 'hassubordinates',
  'namingcontexts', 'supportedldapversion', 'supportedcontrol', 'supportedextension', 'supportedfeatures',
  'supportedsaslmechanisms', 'altserver', 'vendorname', 'vendorversion',
  // RFC 4519
  'businesscategory', 'c', 'cn', 'dc', 'description', 'destinationindicator', 'distinguishedname', 'dnqualifier',
  'enhancedsearchguide', 'facsimiletelephonenumber', 'generationqualifier', 'givenname', 'houseidentifier', 'initials',
  'internationalisdnnumber', 'l', 'member', 'name', 'o', 'ou', 'owner', 'physicaldeliveryofficename', 'postaladdress',
  'postalcode', 'postofficebox', 'preferreddeliverymethod', 'registeredaddress', 'roleoccupant', 'searchguide',
  'seealso', 'serialnumber', 'sn', 'st', 'street', 'telephonenumber', 'teletexterminalidentifier', 'telexnumber',
  'title', 'uid', 'uniquemember', 'userpassword', 'x121address', 'x500uniqueidentifier',
  // inetOrgPerson
  'audio', 'carlicense', 'departmentnumber', 'displayname', 'employeenumber', 'employeetype', 'homephone',
  'homepostaladdress', 'jpegphoto', 'labeleduri', 'mail', 'manager', 'mobile', 'pager', 'photo', 'preferredlanguage',
  'roomnumber', 'secretary', 'usercertificate', 'usersmimecertificate', 'userpkcs12',
]);
